"""Explanations: attention maps, Grad-CAM and Integrated Gradients (``attribution``), scored
against lesion boxes or by agreement and faithfulness (``agreement``), drawn (``figure``), and
the study the report shows (``study``)."""
