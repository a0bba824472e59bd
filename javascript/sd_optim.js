// sd-optim: while a run is live, the browser tab's title shows its progress ("[3/8] ...").
// Loaded by the WebUI with its other scripts, and by `python -m sd_optim app` on page load.
(function () {
    if (window.sd_optim_title_watch) return;
    window.sd_optim_title_watch = true;

    const root = () => (typeof gradioApp === "function" ? gradioApp() : document);
    const original = document.title;

    function update(status) {
        const m = /Trial (\d+) of (\d+)/.exec(status.textContent || "");
        document.title = m ? `[${m[1]}/${m[2]}] ${original}` : original;
    }

    const timer = setInterval(function () {
        const status = root().querySelector("#sd_optim_status");
        if (!status) return;
        clearInterval(timer);
        new MutationObserver(() => update(status)).observe(status, {
            childList: true, subtree: true, characterData: true,
        });
    }, 500);
})();
