"""The ``latentzoo`` commands, one module per area; each is a thin layer over the Python API.

``latentzoo.cli`` keeps the group, loads a command's module only when the command runs (or
``--help`` lists them), adds plugin commands lazily, and turns errors into one line.
``common`` holds what several commands share (registry loading, tables, JSON, pipeline options).
"""
