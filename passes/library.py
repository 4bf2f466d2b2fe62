"""Imports every built-in pass module so they register themselves, and defines the group aliases."""
