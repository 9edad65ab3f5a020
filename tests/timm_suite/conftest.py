import resattn  # noqa: F401  (registers the resattn_* names in timm's registry)
