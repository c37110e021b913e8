// Progressive enhancement only: every page works without it. A running bulk job refreshes its progress.
(function () {
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
