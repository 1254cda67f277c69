"""SynthFACS: an embedded synthetic facial-expression dataset driven by action units.

A sample is made in four steps, each seeded from one ``numpy.random.SeedSequence`` so that
the same :class:`~.params.SynthParams` give byte-identical images (:mod:`.generate`):

1. **Identity** (:mod:`.identity`): face oval size and width-to-height ratio, jaw shape, skin
   tone and blemishes, eye size/spacing/aperture, brows, nose, mouth, hair style and colour,
   glasses, asymmetry. Each identity is shown with ``expressions_per_identity`` expressions
   (a shuffled cycle of the 7 classes, so the default set is balanced).
2. **Expression** (:mod:`.action_units`): the class's prototypical action units
   (``PROTOTYPES``, EMFACS-like) at a random intensity, ``U(intensity_range)`` or, for a
   ``weak_fraction`` of samples, ``U(weak_range)``, jittered per AU, plus small spurious
   activations of the other AUs. Neutral faces carry only spurious activations.
3. **Photograph** (:mod:`.nuisance`, :mod:`.render`): in-plane rotation, scale, shift,
   lighting gradient, exposure, colour cast, cluttered background, occluding blob, gaze, blur
   and sensor noise. The AUs move the drawn geometry (:mod:`.geometry`, the eye region in
   :mod:`.eyes`, built from the polygon primitives of :mod:`.shapes`), which is painted on a
   supersampled :mod:`.canvas`, photographed (:mod:`.photo`) and reduced to region masks
   (:mod:`.masks`) from the same polygons and transform.
4. **Ratings** of the 40 attribute poles by simulated raters, from a factor model
   calibrated on the real correlation matrix (:mod:`.ratings`), driven by face cues
   (:mod:`.cues`).

:mod:`.params` holds the knobs, :mod:`.colours` the colour helpers and :mod:`.preview` a grid
of example faces.
"""
