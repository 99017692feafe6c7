"""Through-plane super-resolution: thick-slice scans to isotropic volumes (``mrisr_throughplane``).

The in-plane slices of a 2D multi-slice scan are sharp along both their axes; degraded along
one of them with the slice profile at the exact spacing ratio they teach a network what the
through-plane views lack (self-supervised, as SMORE/ECLARE; several scans of one protocol
share one model). See documentation/throughplane.md.
"""
