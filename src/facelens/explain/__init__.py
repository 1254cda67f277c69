"""Explanations: Grad-CAM family maps (:mod:`.cams`), their faithfulness checks
(:mod:`.faithfulness`) and the ``explain`` params (:mod:`.params`)."""
