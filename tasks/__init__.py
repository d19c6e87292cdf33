"""Example tasks: each module is a task named after it (``tasks/data_sync.py`` is ``data_sync``).

A task module has an ``async def run(...)`` or ``def run(...)``, or one ``BaseTask``
subclass. Its ``kwargs`` come from the task's ``kwargs:`` in the YAML config.
"""
