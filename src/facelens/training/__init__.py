"""Training loops (:mod:`.fit`), the recipe shared by trials and the final training
(:mod:`.recipe`), pure metrics (:mod:`.metrics`) and the ``train`` params (:mod:`.params`)."""
