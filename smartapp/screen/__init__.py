"""Screen: the physician's screen, the chart described in words and the signing."""
