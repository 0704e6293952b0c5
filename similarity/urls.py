app_name = "similarity"
urlpatterns = []
