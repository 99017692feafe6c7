from setuptools import find_packages, setup

setup(
    name="mrisr",
    version="0.1.0",
    description="Self-configuring super-resolution of real low-resolution MRI "
    "(learned realistic downsampling + EDSR)",
    license="Apache-2.0",
    packages=find_packages(include=["mrisr", "mrisr.*"]),
    package_data={"mrisr.networks": ["pretrained/*.pt", "pretrained/*.json"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.10",
        "SimpleITK>=2.2",
        "scikit-image>=0.21",
        "batchgenerators>=0.25",
        "acvl-utils>=0.2",
        "blosc2>=2.2",
        "tqdm>=4.60",
        "matplotlib>=3.6",
        "PyWavelets>=1.4",
        "nibabel>=5",
        "brisque>=0.2",
        "opencv-python-headless>=4.5",
    ],
    extras_require={
        "demo": ["nilearn>=0.10"],
        "test": ["pytest>=7", "ruff>=0.4"],
    },
    entry_points={
        "console_scripts": [
            "mrisr_plan_and_preprocess=mrisr.cli.plan_and_preprocess:main",
            "mrisr_demo=mrisr.cli.demo:main",
            "mrisr_evaluate=mrisr.cli.evaluate:main",
            "mrisr_predict=mrisr.cli.predict:main",
            "mrisr_find_best_configuration=mrisr.cli.find_best_configuration:main",
            "mrisr_train=mrisr.cli.train:main",
            "mrisr_export_model=mrisr.cli.export_model:main",
            "mrisr_install_model=mrisr.cli.install_model:main",
            "mrisr_throughplane=mrisr.cli.throughplane:main",
        ],
        # the components, found by the same mechanism as a user's plugin
        # (mrisr/utilities/registry.py): a component, or a module that registers some
        "mrisr.degradations": [
            "dsgan=mrisr.degradation.dsgan.model:DSGANDegradation",
            "kspace_acquisition=mrisr.degradation.kspace_acquisition:KSpaceAcquisition",
            "gaussian=mrisr.degradation.gaussian:GaussianDegradation",
            "zerofill=mrisr.degradation.kspace:ZeroFillDegradation",
            "dsn=mrisr.degradation.dsn:DSNDegradation",
            "bicubic=mrisr.degradation.bicubic:BicubicDegradation",
        ],
        "mrisr.planners": [
            "DefaultPlanner=mrisr.planning.planners:DefaultPlanner",
            "DemoPlanner=mrisr.planning.planners:DemoPlanner",
        ],
        "mrisr.trainers": [
            "EDSRTrainer=mrisr.training.trainer:EDSRTrainer",
            "variants=mrisr.training.variants",
        ],
        "mrisr.networks": ["edsr=mrisr.networks.edsr"],
        "mrisr.profiles": [
            "learned=mrisr.throughplane.profile_models:MeasuredProfile",
            "rect=mrisr.throughplane.profile_models:RectProfile",
            "gaussian=mrisr.throughplane.profile_models:GaussianProfile",
            "dsgan=mrisr.throughplane.profile_models:AdversarialProfile",
        ],
        "mrisr.metrics": [
            "fidelity=mrisr.metrics.fidelity",
            "brisque=mrisr.metrics.brisque",
        ],
    },
)
