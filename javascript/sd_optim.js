// sd-optim: once the page is there, the tab shows the live (or last) run again, so a reload or a
// second browser tab reattaches to it; while a run is live, the browser tab's title shows its
// progress ("[3/8] ..."); opening the Plots tab redraws its plots at their real width (they are
// laid out while hidden).
// Loaded by the WebUI with its other scripts, and by `python -m sd_optim app` on page load.
(function () {
    if (window.sd_optim_watch) return;
    window.sd_optim_watch = true;

    const root = () => (typeof gradioApp === "function" ? gradioApp() : document);
    const PREFIX = /^\[\d+\/\d+\] /;

    function update(status) {
        // the page's own title is read each time: the WebUI sets it after its scripts load
        const title = document.title.replace(PREFIX, "");
        const m = /Trial (\d+) of (\d+)/.exec(status.textContent || "");
        const wanted = m ? `[${m[1]}/${m[2]}] ${title}` : title;
        if (document.title !== wanted) document.title = wanted;
    }

    function watchPlotsTab(tabs) {
        tabs.addEventListener("click", function (event) {
            const button = event.target.closest("button");
            if (button && button.textContent.trim() === "Plots") {
                setTimeout(() => window.dispatchEvent(new Event("resize")), 150);
            }
        });
    }

    const timer = setInterval(function () {
        const status = root().querySelector("#sd_optim_status");
        const tabs = root().querySelector("#sd_optim_tabs");
        if (!status || !tabs) return;
        clearInterval(timer);
        new MutationObserver(() => update(status)).observe(status, {
            childList: true, subtree: true, characterData: true,
        });
        watchPlotsTab(tabs);
        const attach = root().querySelector("#sd_optim_attach");
        if (attach) attach.click();
    }, 500);
})();
