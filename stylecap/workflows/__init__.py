"""Workflows: the core composed into what a command does — train a task (``pipeline``), evaluate a
model (``evaluate``), caption folders (``caption`` with its output ``records``), measure and fit the
modality gap (``gap_analysis``). They import the core, never an experiment or the command line, and
never each other in a circle."""
