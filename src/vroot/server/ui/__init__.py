"""The web dashboard (issue 6, point 1): static files that `vroot server` serves at `/ui/`.

    index.html   the page: a sign-in form, then the pages below (hash routes)
    style.css    the one style sheet
    app.js       sign-in, navigation, the live event feed shared by every page
    api.js       the operator API over fetch (Bearer token) and the event stream reader
    dom.js       building elements without HTML strings; times, ages, verdict badges
    fleet.js     #/fleet: hosts with their joint verdicts, each host's VMs naming their host
    agent.js     #/agent/ID: findings, the boot-chain timeline, result history, "attest now"
    chain.js     the boot-chain timeline of a result against its baseline (pure)
    migrations.js #/migrations: migrations with their steps and times; start one, with placement
    live.js      #/live: the server's event stream as it arrives

No build step and nothing from another origin: the files are served as they are here (see
`vroot.server.api._routes_ui`). The token lives only in the tab's sessionStorage and in the
Authorization header of each request; it is never put in a URL or logged.
"""
