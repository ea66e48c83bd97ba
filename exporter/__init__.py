"""Export customer segments from Azure Storage into Constant Contact contact lists.

Entry points (CLI, Azure Functions triggers) all call :class:`exporter.pipeline.Exporter`.
"""

__version__ = "0.1.0"
