"""UMLS concepts: the vocabulary (``vocabulary``), detection metrics as ImageCLEF scores them
(``detection``), concept-aware retrieval (``retrieval``), and their evaluation of a scored
split (``evaluation``)."""
