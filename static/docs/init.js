// Starts Swagger UI on this server's OpenAPI document. A file of our own rather than an inline script,
// so the page's Content-Security-Policy can allow scripts from this origin only.
const root = document.getElementById("swagger-ui");
window.SwaggerUIBundle({ url: root.dataset.url, dom_id: "#swagger-ui", validatorUrl: null });
