"""kimidocs: long-document analysis with Kimi, from folders of PDFs and DOCX files to DuckDB."""

__version__ = "0.1.0"
