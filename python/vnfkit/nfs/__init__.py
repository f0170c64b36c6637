"""The six middleboxes of the study, built on vnfkit (registry kept by the CLI)."""
