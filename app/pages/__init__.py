"""The pages of the main window step stack."""
