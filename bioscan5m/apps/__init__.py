"""Applications built on the library: the end-to-end demo and the identification page (Gradio Space)."""
