// The counsellor web client: converse.js preconfigured for this server (see /chat/config.json).
// No request leaves this server: discovery, provider lists, third-party media, link previews, emoji
// images and push are off, and the page's Content-Security-Policy allows only this origin.

async function start() {
    const response = await fetch('/chat/config.json', { cache: 'no-store' });
    const server = await response.json();
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const websocketUrl = server.websocket_url || `${scheme}//${window.location.host}${server.websocket_path}`;
    window.converse.initialize({
        websocket_url: websocketUrl,
        authentication: 'login',
        locked_domain: server.domain,
        auto_reconnect: true,
        auto_login: false,
        keepalive: true,
        assets_path: server.assets_path,
        view_mode: 'fullscreen',
        i18n: 'en',
        loglevel: 'warn',
        // Young people write to counsellors without being on their roster.
        allow_non_roster_messaging: true,
        allow_registration: false,
        allow_contact_requests: false,
        allow_adhoc_commands: false,
        // Shared office computers: keep nothing after the tab is closed or on logout.
        persistent_store: 'sessionStorage',
        clear_cache_on_logout: true,
        allow_user_trust_override: false,
        // Nothing phones home.
        discover_connection_methods: false,
        show_connection_url_input: false,
        autocomplete_providers_url: '',
        xmpp_providers_url: '',
        providers_link: '',
        fetch_url_headers: false,
        embed_3rd_party_media_players: false,
        render_media: false,
        allowed_image_domains: [],
        allowed_audio_domains: [],
        allowed_video_domains: [],
        use_system_emojis: true,
        show_client_info: false,
        show_desktop_notifications: false,
        play_sounds: false,
        push_app_servers: [],
        // No end-to-end encryption plugin (it needs WebAssembly and keys kept in the browser).
        blacklisted_plugins: ['converse-omemo', 'converse-omemo-views', 'converse-push', 'converse-register'],
    });
}

function whenConverseLoaded() {
    // converse.min.js is a module script too, so it runs before this one; wait for it all the same.
    if (window.converse) {
        return Promise.resolve();
    }
    return new Promise((resolve) => window.addEventListener('converse-loaded', resolve, { once: true }));
}

whenConverseLoaded().then(start).catch((error) => {
    document.body.textContent = `The chat could not start: ${error}`;
});
