"""Using a trained detector: the inference path (``inference``), prediction files (``predict``), the web app and
REST API (``app``, ``page``), exports (``export``) and Grad-CAM heat maps (``explain``)."""
