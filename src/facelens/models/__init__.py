"""VGG16 models for faces (:mod:`.vgg`, :mod:`.params`) and the frozen-prefix activation
cache (:mod:`.cache`)."""
