// Progressive enhancement only: every page works without it. The Content-Security-Policy allows no
// inline script, so every behaviour of a page is wired here, from data attributes and classes.
(function () {
  // Switching space goes to that space's overview.
  const spaces = document.querySelector("select.space-switch");
  if (spaces) {
    spaces.addEventListener("change", () => {
      location.href = "/console/spaces/" + encodeURIComponent(spaces.value);
    });
  }

  // A filter that applies as soon as it changes (its form still has a submit button).
  document.querySelectorAll("[data-submits-form]").forEach((input) => {
    input.addEventListener("change", () => input.form && input.form.submit());
  });

  // A running bulk job refreshes its progress.
  const job = document.getElementById("bulk-job");
  if (!job || job.dataset.status !== "running") return;
  const poll = async () => {
    const response = await fetch(job.dataset.progress, { credentials: "same-origin" });
    if (!response.ok) return;
    const progress = await response.json();
    document.getElementById("bulk-lines").textContent = progress.lines;
    document.getElementById("bulk-published").textContent = progress.published;
    const bar = document.getElementById("bulk-progress");
    bar.max = Math.max(progress.lines, 1);
    bar.value = progress.published;
    if (progress.status !== "running") { location.reload(); return; }
    setTimeout(poll, 500);
  };
  setTimeout(poll, 500);
})();
