"""Data: SynthFACS, raw-source readers, the safe image decoder, the manifest, the split and
the torch dataset."""
