"""Command-line entry points (thin modules over the ``*_api`` modules).

Importing this package, which every entry point does before torch is imported, sets a
passive OpenMP wait policy unless the user chose one (see :mod:`mrisr.utilities.threads`):
threads that sleep at a barrier instead of spinning keep training at its fair share of the
CPUs beside other work.
"""

from mrisr.utilities.threads import configure_openmp

configure_openmp()
