// Renders an Ollama TEMPLATE for conversations the way Ollama does: consecutive messages of the same role
// are joined with a blank line, .System holds the system messages' text, .Messages all messages (system
// included), .Response is empty because the model is about to answer.
//
// usage: go run render.go TEMPLATE_FILE CONVERSATIONS_JSON  ->  JSON list of rendered prompts on stdout
package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		msg := msgs[i]
		if msg.Role == "system" {
			system = append(system, msg.Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msg.Role {
			collated[len(collated)-1].Content += "\n\n" + msg.Content
		} else {
			collated = append(collated, &msg)
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func main() {
	source, err := os.ReadFile(os.Args[1])
	check(err)
	tmpl, err := template.New("ollama").Option("missingkey=zero").Parse(string(source))
	check(err)
	raw, err := os.ReadFile(os.Args[2])
	check(err)
	var conversations [][]Message
	check(json.Unmarshal(raw, &conversations))
	rendered := []string{}
	for _, conversation := range conversations {
		system, messages := collate(conversation)
		var out strings.Builder
		values := map[string]any{"System": system, "Messages": messages, "Tools": nil, "Prompt": "", "Response": ""}
		check(tmpl.Execute(&out, values))
		rendered = append(rendered, out.String())
	}
	check(json.NewEncoder(os.Stdout).Encode(rendered))
}

func check(err error) {
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
}
