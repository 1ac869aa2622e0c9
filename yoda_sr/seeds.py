"""Seeds derived from a base seed and names, so that a draw depends only on what it is for.

``upscale`` seeds each image from the run's seed and the image's relative path; ``train`` seeds each
sample's crop and noise from the run's seed, the sample's global index and the purpose. Either way a
result does not depend on batch size, order, sharding or resumption.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text, joined by NUL (fits ``torch.Generator.manual_seed``)."""
    digest = hashlib.sha256("\0".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
