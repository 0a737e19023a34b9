"""The live dashboards: HTML pages, their static assets and the SSE stream that feeds them."""
