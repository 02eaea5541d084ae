"""The web page for trying the service (index.html, app.js, sigv4.js, style.css: no framework, no build step),
and the security headers every copy of it is served with (security.py: the local stack and CloudFront)."""
