"""facepii: how much identity leaks from protected face embeddings.

Runs reconstruction attacks (template -> face) against face-embedding
protections, has an independent face-recognition judge re-identify the
reconstructions, and reports the privacy-utility trade-off against the
unprotected, PII-level leakage.
"""

# Before anything else: every numeric library reads its kernel switches when it loads (facepii.kernels).
from facepii import kernels as _kernels  # noqa: E402

_kernels.pin()

# Write only where told: onnxruntime (1.2x and later) otherwise keeps a device id and queued telemetry events
# under $XDG_CACHE_HOME/Microsoft/DeveloperTools/ on every session it opens. Read when the library loads, and
# inherited by the processes facepii starts (Dask workers).
import os as _os  # noqa: E402

_os.environ["ORT_DISABLE_TELEMETRY"] = "1"

__version__ = "0.1.0"

from facepii.errors import FacepiiError  # noqa: E402

__all__ = ["FacepiiError", "__version__"]
