"""Pure renderers: snapshot -> rows of rich.text.Text. No Textual imports, no I/O."""
