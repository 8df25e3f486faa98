// The kdsl extension: starts `kdsl lsp` (the command is the setting kdsl.server.command) and
// connects VS Code to it over stdio. Highlighting comes from syntaxes/kdsl.tmLanguage.json.
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function serverOptions() {
  const config = vscode.workspace.getConfiguration("kdsl");
  const [command, ...args] = config.get("server.command", ["kdsl", "lsp"]);
  return { command, args, transport: TransportKind.stdio };
}

async function activate(context) {
  const config = vscode.workspace.getConfiguration("kdsl");
  const clientOptions = {
    documentSelector: [{ scheme: "file", language: "kdsl" }, { scheme: "untitled", language: "kdsl" }],
    initializationOptions: {
      debounceMs: config.get("diagnostics.debounceMs", 150),
      modelPaths: config.get("completion.modelPaths", false),
    },
  };
  client = new LanguageClient("kdsl", "kdsl language server", serverOptions(), clientOptions);
  try {
    await client.start();
  } catch (err) {
    vscode.window.showErrorMessage(
      `kdsl: could not start the language server (${err}). Install it with pip install 'kdsl[lsp]', ` +
      "or set kdsl.server.command.");
  }
  context.subscriptions.push(vscode.workspace.onDidChangeConfiguration(async (event) => {
    if (event.affectsConfiguration("kdsl") && client) {
      await client.stop();
      client = new LanguageClient("kdsl", "kdsl language server", serverOptions(), clientOptions);
      await client.start();
    }
  }));
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
