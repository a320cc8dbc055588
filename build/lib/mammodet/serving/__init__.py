"""Using a trained detector: the one inference path (``inference``), prediction files (``predict``), pictures
(``render``), the web app and REST API (``app``, ``page``), exports (``export``) and Grad-CAM (``explain``).
See ``docs/serving.md``."""
