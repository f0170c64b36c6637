"""The middleboxes shipped with vnfkit (one module each; the CLI registry is filled by the lead)."""
