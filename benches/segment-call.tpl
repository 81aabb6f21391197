{"type": {{ type | tojson }}, "userId": {{ user_id | tojson }},
{% if type == "track" %}"event": {{ event | tojson }}, "properties": {{ properties | tojson }},
{% else %}"traits": {{ traits | tojson }},{% endif %}
"messageId": {{ message_id | tojson }}, "timestamp": {{ timestamp | tojson }}}
