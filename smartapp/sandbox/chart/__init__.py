"""The EHR screens: ED list and patient chart with the embedded app launch."""
