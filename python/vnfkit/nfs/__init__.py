"""The middleboxes shipped with vnfkit, built with the same public API a user has."""
