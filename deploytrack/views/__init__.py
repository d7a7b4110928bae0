"""HTTP views: `api` (the native JSON API) and `pages` (the HTML UI)."""
