"""The APIs clients speak, each a translation at the edge onto the one request path
(``tako.app.pipeline``): parse into a ChatRequest, render the answer back."""
