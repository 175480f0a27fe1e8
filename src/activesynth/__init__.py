"""activesynth: decide which medical images are worth an expert's time, and synthesise new ones.

The data flow is ``sources -> ImageSet -> Pool -> task model -> Strategy -> Query -> Oracle``;
see ``docs/architecture.md``.
"""

from __future__ import annotations

from activesynth.errors import ActivesynthError, ConfigError, DataError

__all__ = ["ActivesynthError", "ConfigError", "DataError", "__version__"]
__version__ = "0.1.0"
