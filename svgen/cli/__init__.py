"""Command-line interface (click); no model code lives here."""
