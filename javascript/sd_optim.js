// sd-optim: once the page is there, the tab shows the live (or last) run again, so a reload or a
// second browser tab reattaches to it; while a run is live, the browser tab's title shows its
// progress ("[3/8] ..."); opening the Plots tab redraws its plots at their real width (they are
// laid out while hidden); keyboard shortcuts S (stop), P (pause / resume), M (manual scoring), 1-9 and 0 (ratings);
// a checkpoint just saved (Save as checkpoint, or a run's save-best) shows in the WebUI's checkpoint
// dropdown at once: its own refresh button is pressed, as a user would (A1111 / reForge / Classic
// and Forge name it differently); a refused Start scrolls to the first panel it marks.
// Loaded by the WebUI with its other scripts, and by `python -m sd_optim app` on page load.
(function () {
    if (window.sd_optim_watch) return;
    window.sd_optim_watch = true;

    const root = () => (typeof gradioApp === "function" ? gradioApp() : document);
    const PREFIX = /^\[\d+\/\d+\] /;

    function update(status) {
        // the page's own title is read each time: the WebUI sets it after its scripts load
        const title = document.title.replace(PREFIX, "");
        const m = /(\d+) of (\d+) trials done/.exec(status.textContent || "");
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

    // Keyboard shortcuts while the tab is shown and no text field has the focus:
    // S stops the run, P pauses or resumes it, M switches rating by hand on or off (for the next
    // Start), 1-9 and 0 (10) rate the image waiting for a rating.
    function onKey(event) {
        if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
        const target = event.composedPath ? event.composedPath()[0] : event.target;
        if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
        const start = root().querySelector("#sd_optim_start");
        if (!start || start.offsetParent === null) return; // another tab is shown
        const status = root().querySelector("#sd_optim_status");
        const paused = status && /\bpaused\b/.test(status.textContent || "");
        const key = event.key.toLowerCase();
        const rating = root().querySelector("#sd_optim_rate");
        const rating_shown = rating && rating.offsetParent !== null;
        let id = key === "s" ? "sd_optim_stop" : key === "p" ? (paused ? "sd_optim_resume" : "sd_optim_pause")
            : key === "m" ? "sd_optim_toggle_manual" : "";
        if (rating_shown && /^[0-9]$/.test(key)) id = "sd_optim_rate_" + (key === "0" ? "10" : key);
        const button = id && root().querySelector("#" + id);
        if (!button) return;
        event.preventDefault();
        button.click();
    }

    document.addEventListener("keydown", onKey);

    const CHECKPOINT_REFRESH = ["#refresh_sd_model_checkpoint", "#forge_refresh_checkpoint"];
    const SAVED = /(?:^|; )saved ([^;]+)|Saved trial \d+ as (.+)/;

    function refreshCheckpointsWhenSaved(box) {
        const savedIn = () => { const m = SAVED.exec(box.textContent || ""); return m ? m[1] || m[2] : ""; };
        let seen = savedIn();  // a file saved before the page loaded is listed already
        new MutationObserver(function () {
            const saved = savedIn();
            if (!saved || saved === seen) return;
            seen = saved;
            for (const id of CHECKPOINT_REFRESH) {
                const button = root().querySelector(id);
                if (button) button.click();
            }
        }).observe(box, {childList: true, subtree: true, characterData: true});
    }

    // A refused Start (or Check set-up) names the first problem in the status line and opens the
    // panels it marks; the page scrolls to the first marked panel, which may be below the fold.
    const REFUSED = /^\s*(The run did not start:|Fix the set-up:)/;

    function scrollToProblemsWhenRefused(status) {
        let seen = "";
        new MutationObserver(function () {
            const text = status.textContent || "";
            if (text === seen) return;
            seen = text;
            if (!REFUSED.test(text)) return;
            setTimeout(function () {  // once the opened panels are laid out
                const first = [...root().querySelectorAll(".sd_optim_error")]
                    .find(box => box.offsetParent !== null && (box.textContent || "").trim());
                if (first) first.scrollIntoView({block: "center"});
            }, 400);
        }).observe(status, {childList: true, subtree: true, characterData: true});
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
        refreshCheckpointsWhenSaved(status);
        scrollToProblemsWhenRefused(status);
        const result = root().querySelector("#sd_optim_result_status");
        if (result) refreshCheckpointsWhenSaved(result);
        const attach = root().querySelector("#sd_optim_attach");
        if (attach) attach.click();
    }, 500);
})();
