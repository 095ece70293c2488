"""Image utilities behind the Image sub-tab."""
