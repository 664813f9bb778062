"""The default plugins: registered by the plugin manager exactly as a third-party plugin would be."""
