"""Gradio, imported only after the environment that keeps it offline and private is set."""

from __future__ import annotations

import os
from types import ModuleType

from ..errors import RequestError

OFFLINE = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_SSR_MODE": "False",
    "GRADIO_RUN_HISTORY": "False",
    "GRADIO_MCP_SERVER": "False",
}
"""Environment set before Gradio is imported: no analytics, version check or telemetry, no Node server."""


def load_gradio() -> ModuleType:
    """Gradio, imported after ``OFFLINE`` is in the environment (whatever it held before)."""
    os.environ.update(OFFLINE)
    try:
        import gradio
    except ImportError:
        raise RequestError("the web page needs Gradio: pip install 'yoda-sr[web]'") from None
    return gradio
