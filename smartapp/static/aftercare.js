// The discharge sheet's Print button (no inline script: the CSP allows scripts from 'self').
document.querySelectorAll("[data-print]").forEach((button) => {
  button.addEventListener("click", () => window.print());
});
