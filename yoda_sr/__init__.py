"""yoda-sr: diffusion super-resolution that diffuses only where it matters (YODA).

Importing the package is cheap; torch is imported by the modules that need it.
"""

from ._version import __version__

__all__ = ["__version__"]
