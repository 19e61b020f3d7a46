// The playground's page: GraphiQL with Tally's opening tabs, and in
// development a button that fetches an admin token. Kept out of the HTML
// so that the Content-Security-Policy can forbid inline script.
(function () {
  'use strict';
  var config = JSON.parse(document.getElementById('tally-playground-config').textContent);
  var devToken = null;

  function hasAuthorization(headers) {
    return Object.keys(headers || {}).some(function (k) { return k.toLowerCase() === 'authorization'; });
  }

  // GraphiQL works out the operation's name a moment after the document
  // changes, so a run right after switching tabs can send the previous
  // tab's name, which the server refuses ("operation … not found"). A name
  // the document does not define is dropped: with one operation the server
  // needs none.
  function definesOperation(query, name) {
    return new RegExp('\\b(query|mutation|subscription)\\s+' + name + '\\b').test(query);
  }

  var http = GraphiQL.createFetcher({ url: config.endpoint });
  // The development token applies to every tab, so it is added here
  // rather than to one tab's Headers pane; a header typed there wins.
  function fetcher(params, opts) {
    var headers = Object.assign({}, opts && opts.headers);
    if (devToken && !hasAuthorization(headers)) {
      headers.Authorization = 'Bearer ' + devToken.token;
    }
    if (params.operationName && !definesOperation(params.query || '', params.operationName)) {
      params = Object.assign({}, params, { operationName: undefined });
    }
    return http(params, Object.assign({}, opts, { headers: headers }));
  }

  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultTabs: config.tabs,
      defaultEditorToolsVisibility: true,
      shouldPersistHeaders: false
    })
  );

  var button = document.getElementById('tally-dev-token');
  var status = document.getElementById('tally-dev-token-status');
  if (!button || !config.devTokenURL) {
    return;
  }
  button.addEventListener('click', function () {
    status.textContent = 'Asking for a token…';
    fetch(config.devTokenURL, { method: 'POST', headers: { 'X-Tally-Playground': 'dev-token' } })
      .then(function (resp) {
        return resp.json().then(function (body) {
          if (!resp.ok) {
            throw new Error(body.error || 'HTTP ' + resp.status);
          }
          return body;
        });
      })
      .then(function (body) {
        devToken = body;
        status.textContent = 'Calls without an Authorization header now run as ' + body.subject +
          ' (' + body.role + ') until ' + new Date(body.expiresAt).toLocaleTimeString() + '.';
        status.dataset.state = 'ready';
      })
      .catch(function (err) {
        status.textContent = 'No development token: ' + err.message;
        status.dataset.state = 'failed';
      });
  });
})();
