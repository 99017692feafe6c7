#!/usr/bin/env bash
# The CUDA path in one script (issue 31), about 5-8 minutes on one GPU:
#   1. the demo dataset, planned and preprocessed (DemoPlanner);
#   2. mrisr_train of dsgan_edsr on CUDA with bf16 autocast (the DSGAN degradation stage runs
#      on CUDA first), then gaussian_edsr with fp16 autocast and its gradient scaler;
#      channels_last as on CPU;
#   3. mrisr_predict of the held-out real LR on CUDA with 8-fold TTA and uncertainty maps;
#   4. a DDP launch: --num-gpus 2 where two GPUs are visible, else one NCCL process group
#      of world size 1 around the SR network (the NCCL/DDP path on one GPU);
# printing each step's time, training throughput and peak GPU memory, and failing loudly on
# any CUDA error (a non-zero exit, "CUDA error" or "device-side assert" in a log, a step
# that did not run on cuda).
#
#   bash benchmarks/device_check.sh [WORKDIR]        # mrisr installed, a CUDA GPU visible
#
# The machine needs no network: mrisr and its dependencies must be installed (the device
# machine gets a copy of the working tree; carry a virtual environment built here).
set -euo pipefail
cd "$(dirname "$0")/.."
W="${1:-$(mktemp -d /tmp/mrisr_device_check.XXXX)}"
mkdir -p "$W"
export mrisr_raw="$W/mrisr_raw" mrisr_preprocessed="$W/mrisr_preprocessed" mrisr_results="$W/mrisr_results"
PY="${PYTHON:-python3}"
LOG="$W/logs"
mkdir -p "$LOG" "$mrisr_raw" "$mrisr_preprocessed" "$mrisr_results"

"$PY" - <<'EOF'
import torch
assert torch.cuda.is_available(), "device_check: no CUDA device visible"
p = torch.cuda.get_device_properties(0)
print(f"device_check: torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.device_count()} x {p.name} ({p.total_memory / 2**30:.0f} GiB), "
      f"bf16 {torch.cuda.is_bf16_supported()}")
EOF

# one command in-process: its time and the peak GPU memory it allocated (this process)
step() {
    local name="$1"; shift
    "$PY" - "$name" "$@" > "$LOG/$name.log" 2>&1 <<'EOF' || { echo "device_check: FAILED: $name"; tail -30 "$LOG/$name.log"; exit 1; }
import runpy, sys, time
import torch
name, module, *args = sys.argv[1:]
sys.argv = [module, *args]
t = time.perf_counter()
code = 0
try:
    runpy.run_module(module, run_name="__main__")
except SystemExit as e:
    code = e.code or 0
peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else 0.0
print(f"device_check: {name}: exit {code}, {time.perf_counter() - t:.1f} s, "
      f"peak GPU memory {peak:.0f} MiB (this process)", flush=True)
sys.exit(code)
EOF
    if grep -Eq "CUDA error|device-side assert|CUBLAS_STATUS|cuDNN error" "$LOG/$name.log"; then
        echo "device_check: FAILED: $name logged a CUDA error"; grep -E "CUDA error|device-side assert|CUBLAS|cuDNN" "$LOG/$name.log" | head; exit 1
    fi
    grep "^device_check: $name" "$LOG/$name.log"
}

T0=$(date +%s)
step demo_dataset mrisr.dataset.demo "$mrisr_raw" -d 1
step plan mrisr.cli.plan_and_preprocess -d 1 -pl DemoPlanner -np 8
step train_dsgan_bf16 mrisr.cli.train 0 -d 1 -c dsgan_edsr -tr EDSRTrainer_demo -p mrisrDemoPlans --device cuda --precision bf16 -nw 4
step train_gaussian_fp16 mrisr.cli.train 1 -d 1 -c gaussian_edsr -tr EDSRTrainer_demo -p mrisrDemoPlans --device cuda --precision fp16 -nw 4
for f in 0 1; do
    tl=$(ls "$mrisr_results"/Dataset001_*/EDSRTrainer_demo__mrisrDemoPlans__*/fold_$f/training_log.txt)
    grep -q "device cuda" "$tl" || { echo "device_check: FAILED: fold $f did not train on cuda"; exit 1; }
    grep -E "precision|time estimate|training loop took|best validation" "$tl" | sed "s/^/device_check: fold $f: /"
done
grep -h "dsgan\|DSGAN" "$LOG/train_dsgan_bf16.log" | grep -i "cuda\|units\|iterations" | head -5 | sed "s/^/device_check: dsgan stage: /" || true
step predict_tta mrisr.cli.predict -i "$mrisr_raw/Dataset001_MNIDemo/imagesLRTs" -o "$W/predictions" -d 1 -c dsgan_edsr -tr EDSRTrainer_demo -p mrisrDemoPlans -f 0 --device cuda --save-uncertainty
ls "$W/predictions" | sed "s/^/device_check: predicted: /"

if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    step train_ddp mrisr.cli.train 2 -d 1 -c gaussian_edsr -tr EDSRTrainer_demo -p mrisrDemoPlans --device cuda --num-gpus 2
else
    "$PY" - <<'EOF' > "$LOG/ddp.log" 2>&1 || { echo "device_check: FAILED: ddp"; tail -30 "$LOG/ddp.log"; exit 1; }
import os, time
import torch, torch.distributed as dist
from mrisr.networks.edsr import EDSR
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
dist.init_process_group("nccl", rank=0, world_size=1)
net = EDSR(scale=2, num_blocks=8, num_features=32).cuda().to(memory_format=torch.channels_last)
ddp = torch.nn.parallel.DistributedDataParallel(net, device_ids=[0])
opt = torch.optim.Adam(ddp.parameters(), 1e-4, fused=True)
x = torch.rand(16, 1, 48, 48, device="cuda").contiguous(memory_format=torch.channels_last)
y = torch.rand(16, 1, 96, 96, device="cuda")
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(50):
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.l1_loss(ddp(x).float(), y)
    loss.backward(); opt.step()
torch.cuda.synchronize()
print(f"device_check: ddp (NCCL, world size 1): 50 steps of batch 16 in {time.perf_counter() - t:.2f} s, "
      f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
dist.destroy_process_group()
EOF
    grep "^device_check" "$LOG/ddp.log"
fi
echo "device_check: all steps passed in $(( $(date +%s) - T0 )) s; logs in $LOG"
