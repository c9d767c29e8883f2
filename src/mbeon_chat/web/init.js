// The counsellor web client: converse.js preconfigured for this server (see /chat/config.json).
// No request leaves this server: discovery, provider lists, third-party media, link previews, emoji
// images and push are off, and the page's Content-Security-Policy allows only this origin.

const NS_BLOCKING = 'urn:xmpp:blocking';

// A small converse.js plugin with this server's adjustments.
function addServerPlugin(converse) {
    converse.plugins.add('mbeon-chat', {
        dependencies: ['converse-blocklist'],
        initialize() {
            const { _converse } = this;
            const { api } = _converse;
            const { html } = converse.env;

            // converse.js waits for the XEP-0191 blocklist before it lists a chat with someone who is not on
            // the roster; without blocking support on the server that wait never ends and such chats stay
            // invisible. Give it an empty blocklist then (it asks once, gets an error, and carries on).
            api.listen.on('discoInitialized', async () => {
                const domain = _converse.session.get('domain');
                if (!(await api.disco.supports(NS_BLOCKING, domain)) && !_converse.state.blocklist) {
                    _converse.state.blocklist = new _converse.exports.Blocklist();
                }
            });

            // The stock full-screen page links to the converse.js project's site and shows sponsor logos
            // from there (which the CSP would block): a counsellor needs neither.
            api.elements.define(
                'converse-controlbox-navbar',
                class extends _converse.exports.CustomElement {
                    render() {
                        return '';
                    }
                },
            );
            api.elements.define(
                'converse-footer',
                class extends _converse.exports.CustomElement {
                    render() {
                        return html`<footer class="footer mt-auto py-3 text-center subdued">
                            <small>Web chat: converse.js, served by mbeon-chat</small>
                        </footer>`;
                    }
                },
            );
        },
    });
}

async function start() {
    const response = await fetch('/chat/config.json', { cache: 'no-store' });
    const server = await response.json();
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const websocketUrl = server.websocket_url || `${scheme}//${window.location.host}${server.websocket_path}`;
    addServerPlugin(window.converse);
    window.converse.initialize({
        whitelisted_plugins: ['mbeon-chat'],
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
