"""detcore's own plugins, registered exactly like third-party ones."""
