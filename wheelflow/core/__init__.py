"""The base layer: errors and their exit codes, redaction, the home folder, deadlines, child environments, distributions."""
