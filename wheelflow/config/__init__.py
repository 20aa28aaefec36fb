"""The release spec and its matrix, read and checked: no network, no subprocess."""
