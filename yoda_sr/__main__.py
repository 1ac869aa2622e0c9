"""`python -m yoda_sr` (also what `torchrun -m yoda_sr` runs)."""

from .cli import main

if __name__ == "__main__":
    main()
